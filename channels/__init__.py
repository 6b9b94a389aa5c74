"""One module per channel: send a batch, parse inbound, nothing else. Never imports hub."""
