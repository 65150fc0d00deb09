"""The runtime every Gearshift service shares: settings, gRPC bootstrap, telemetry, errors."""
