"""normgen gateware: configuration and Amaranth components."""
