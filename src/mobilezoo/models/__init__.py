"""One module per paper. The registry imports them all (``registry.load_all_models``) to register the builders."""
