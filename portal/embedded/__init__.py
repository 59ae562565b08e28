"""Local stand-ins for production services that `enclave run` starts so one machine needs no servers."""
