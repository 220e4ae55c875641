from highland.cli import app

app()
