"""simsearch: the command line of the metric-learning image similarity search (its version: the installed
package's metadata, read by ``engine.simsearch_version``)."""
