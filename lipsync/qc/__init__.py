"""Quality control of the delivered film: lip-sync measurements (SyncNet LSE-D / LSE-C, Light-ASD offset) and reports."""
