from authbus.cli import main

main()
