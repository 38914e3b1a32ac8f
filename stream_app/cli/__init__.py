"""`stream-app`, the command line: `main` parses the arguments, `commands` carries them out.
The top of the layering: nothing in the package imports it."""
