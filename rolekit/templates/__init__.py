"""Package data: the plugin template ``rolekit new-plugin`` fills in (see ``rolekit.scaffold``)."""
