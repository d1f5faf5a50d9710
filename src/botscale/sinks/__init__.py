"""Sinks for the batch writers: where batches of rows end up."""
