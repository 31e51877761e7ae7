"""The counter: the local sales API for cash registers (``api``), the sales service that has each sale signed by
the node's TSE (``sales``), its configuration and the TSE drivers (software TSE in ``protocols.tse``, fiskaly here).
"""
