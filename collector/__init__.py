"""The rackwatch collector: takes samples from MQTT and batch-writes them to InfluxDB."""
