from lina.cli import main

main()
