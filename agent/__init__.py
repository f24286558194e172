"""The rackwatch agent: polls devices on site and ships samples to the collector over MQTT."""
