"""Job Center: one database for every provider's asynchronous bulk jobs."""
