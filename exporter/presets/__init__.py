"""Built-in target catalogues (package data): one YAML file per preset."""
