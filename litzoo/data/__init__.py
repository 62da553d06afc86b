"""Lightning-free data shared by several packages: the bundled digits as tensors (:mod:`litzoo.data.digits`) and
the 2-D toy laws (:mod:`litzoo.data.toy2d`). :mod:`litzoo.metrics` and :mod:`litzoo.datamodules` both read
them here, so neither imports the other."""
