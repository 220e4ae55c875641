from highland.cli import main

# Guarded: the writer process (spawn) imports this module again as __mp_main__.
if __name__ == "__main__":
    main()
