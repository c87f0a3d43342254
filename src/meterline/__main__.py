from meterline.cli.app import main

main()
