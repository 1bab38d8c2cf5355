"""Fault tests: delivery under outages, slow servers, forks and exits; hostile input."""
