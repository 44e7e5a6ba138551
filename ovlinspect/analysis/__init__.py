"""Pure analyses over the model: they receive the filesystem through small protocols."""
