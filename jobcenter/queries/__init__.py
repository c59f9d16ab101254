"""Queries shared by the admin, the API and exports: filters, keyset order, dashboard."""
