"""QStash receiver: verifies signed deliveries and commits them to a durable inbox for the sensor."""
