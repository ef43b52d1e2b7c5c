"""RTP, RTCP and SRTP (RFC 3550, 3711) and one-port demultiplexing (RFC 7983), sans-I/O."""
