"""Settings, secrets, database engines and schemas shared by every crmcluster service.

``config`` imports nothing of ours; every other package may import it.
"""
