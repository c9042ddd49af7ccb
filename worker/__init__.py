"""callwatch: tracks calls until their recordings are archived and consumers are told."""

__version__ = "0.1.0"
