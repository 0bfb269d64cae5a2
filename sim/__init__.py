"""A simulated full-field TXM (NSLS-II FXI-like) for XANES: sample, ophyd devices and plans."""
