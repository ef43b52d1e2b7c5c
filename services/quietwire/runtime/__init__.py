"""What every quietwire service shares: settings, logging, gRPC, TLS, Redis,
metrics, health and the run-until-signal skeleton."""
