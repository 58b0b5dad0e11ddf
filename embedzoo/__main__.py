from embedzoo.cli import main

main()
