"""MLLP connectors: the framing protocol, the ``mllp_listener`` source and the ``mllp_sender`` destination."""
