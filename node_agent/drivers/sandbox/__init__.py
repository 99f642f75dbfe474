"""The sandbox host driver: a Sage CRM server played on this machine, under the agent's data dir."""
