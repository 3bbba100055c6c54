/etc/tps-agent/
