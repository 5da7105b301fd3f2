"""The base layer: errors and warnings, exact nearest neighbours, files written whole."""
