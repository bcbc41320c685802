"""puppetcam training, export and data preparation (see docs/ARCHITECTURE.md)."""
