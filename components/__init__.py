"""Pure steps of a descent study: data in, data out, no MLflow inside."""
