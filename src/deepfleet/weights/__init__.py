"""Model weights on a fleet: parse a source, pull it into a verified cache, list and remove."""
