"""phone: the ZRTP softphone, echo service and load generator."""
