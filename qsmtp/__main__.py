from qsmtp.cli import main

main()
