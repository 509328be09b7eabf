"""The ``twistd sipd`` daemon: config file, service, handlers, HTTP status."""
