"""The fleet as central knows it: node registration, the fleet CA, central's downlink signing key and device commands.
"""
