"""Facts about models and hardware, and the bundled demo model."""
