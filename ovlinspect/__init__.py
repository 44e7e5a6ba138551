"""ovlinspect: storage-driver diagnostics for overlayfs container hosts (no I/O at import)."""

__version__ = "0.1.0"
