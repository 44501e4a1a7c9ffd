"""Start the Visual-ARFT workbench web app (also the Hugging Face Space entry point)."""

from workbench.ui.app import main

if __name__ == "__main__":
    main()
