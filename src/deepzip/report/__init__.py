"""Reports: the papers' tables and plots."""
