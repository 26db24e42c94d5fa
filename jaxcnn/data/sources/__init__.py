"""One module per data source; the loaders are re-exported by :mod:`jaxcnn.data`."""
