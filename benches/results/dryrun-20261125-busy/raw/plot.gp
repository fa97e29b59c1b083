set terminal pngcairo size 1800,1040 font "sans,10"
set output "../results/dryrun-20261125-busy/plot.png"
set multiplot layout 2,3 title "dryrun-20261125-busy: OTLP traces -> blackhole, 100 spans/request (filled = passed: >=97%, no errors, RSS flat; x = not)"
set grid
set key top left font ',9'
set xlabel 'offered load (K spans/s)'
set title 'grpc: achieved throughput'
set ylabel 'achieved (K spans/s)'
unset logscale y
set xrange [0:787.5]
set yrange [0:787.5]
plot x title 'offered' dt 3 lc rgb '#888888', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-rotel-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#2ca02c' title 'shardtel-1core', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'grpc: p99 latency (h2load solid, loadgen HDR dashed)'
set ylabel 'p99 latency (ms, log)'
set logscale y
set yrange [*:*]
plot '../results/dryrun-20261125-busy/raw/plot-shardtel-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-grpc-loadgen.dat' u 1:3 w lp pt 6 dt 2 lc rgb '#1f77b4' title 'shardtel (loadgen)', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#2ca02c' title 'shardtel-1core', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'grpc: achieved per collector core (scaling efficiency at sustained rate: shardtel 252%)'
set ylabel 'achieved / cores (K spans/s)'
unset logscale y
set yrange [0:*]
plot '../results/dryrun-20261125-busy/raw/plot-shardtel-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#1f77b4' title 'shardtel (2 cores)', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#d62728' title 'rotel (2 cores)', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#2ca02c' title 'shardtel-1core (1 core)'
set title 'http: achieved throughput'
set ylabel 'achieved (K spans/s)'
unset logscale y
set xrange [0:787.5]
set yrange [0:787.5]
plot x title 'offered' dt 3 lc rgb '#888888', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-http-h2load.dat' u 1:2 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-http-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-rotel-http-h2load.dat' u 1:2 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-http-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-http-h2load.dat' u 1:2 w lp pt 7 lc rgb '#2ca02c' title 'shardtel-1core', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-http-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'http: p99 latency (h2load solid, loadgen HDR dashed)'
set ylabel 'p99 latency (ms, log)'
set logscale y
set yrange [*:*]
plot '../results/dryrun-20261125-busy/raw/plot-shardtel-http-h2load.dat' u 1:3 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-http-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-http-loadgen.dat' u 1:3 w lp pt 6 dt 2 lc rgb '#1f77b4' title 'shardtel (loadgen)', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-http-h2load.dat' u 1:3 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-http-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-http-h2load.dat' u 1:3 w lp pt 7 lc rgb '#2ca02c' title 'shardtel-1core', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-http-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'http: achieved per collector core (scaling efficiency at sustained rate: shardtel 125%)'
set ylabel 'achieved / cores (K spans/s)'
unset logscale y
set yrange [0:*]
plot '../results/dryrun-20261125-busy/raw/plot-shardtel-http-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#1f77b4' title 'shardtel (2 cores)', \
  '../results/dryrun-20261125-busy/raw/plot-rotel-http-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#d62728' title 'rotel (2 cores)', \
  '../results/dryrun-20261125-busy/raw/plot-shardtel-1core-http-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#2ca02c' title 'shardtel-1core (1 core)'
unset multiplot
