"""S3 -> Prefect bridge (stdlib + boto3 only): see bridge.py and README.md."""
