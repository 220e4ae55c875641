from highland.cli import main

main()
