"""Where results live: the versioned Parquet schemas, result rows read from trial folders, MLflow and Parquet writers."""
