"""Helpers shared by every test tier: waiting on events, a fake clock, `quietwire up`."""
