from attnsweep.pipelines.cli import main

main()
