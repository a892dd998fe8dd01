"""Sluice: the gateway server and everything with IO or state."""
