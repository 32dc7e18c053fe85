"""`datakit review`: the items, the decisions file, the local web server and its page."""
