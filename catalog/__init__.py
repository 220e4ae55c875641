"""The plan catalog: indicators, agencies and districts as YAML data, validated on load."""
