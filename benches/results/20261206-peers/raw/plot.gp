set terminal pngcairo size 1800,1040 font "sans,10"
set output "/work/main/benches/results/20261206-peers/plot.png"
set multiplot layout 2,3 title "20261206-peers: OTLP traces -> blackhole, 100 spans/request (filled = passed: >=97%, no errors, RSS flat; x = not)"
set grid
set key top left font ',9'
set xlabel 'offered load (K spans/s)'
set title 'grpc: achieved throughput'
set ylabel 'achieved (K spans/s)'
unset logscale y
set xrange [0:1575]
set yrange [0:1575]
plot x title 'offered' dt 3 lc rgb '#888888', \
  '/work/main/benches/results/20261206-peers/raw/plot-shardtel-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '/work/main/benches/results/20261206-peers/raw/plot-shardtel-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#7f7f7f' title 'otelcol', \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'grpc: p99 latency (h2load solid, loadgen HDR dashed)'
set ylabel 'p99 latency (ms, log)'
set logscale y
set yrange [*:*]
plot '/work/main/benches/results/20261206-peers/raw/plot-shardtel-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '/work/main/benches/results/20261206-peers/raw/plot-shardtel-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#7f7f7f' title 'otelcol', \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'grpc: achieved per collector core'
set ylabel 'achieved / cores (K spans/s)'
unset logscale y
set yrange [0:*]
plot '/work/main/benches/results/20261206-peers/raw/plot-shardtel-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#1f77b4' title 'shardtel (2 cores)', \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#7f7f7f' title 'otelcol (2 cores)', \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#d62728' title 'rotel (2 cores)'
set title 'http: achieved throughput'
set ylabel 'achieved (K spans/s)'
unset logscale y
set xrange [0:1575]
set yrange [0:1575]
plot x title 'offered' dt 3 lc rgb '#888888', \
  '/work/main/benches/results/20261206-peers/raw/plot-shardtel-http-h2load.dat' u 1:2 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '/work/main/benches/results/20261206-peers/raw/plot-shardtel-http-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-http-h2load.dat' u 1:2 w lp pt 7 lc rgb '#7f7f7f' title 'otelcol', \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-http-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-http-h2load.dat' u 1:2 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-http-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'http: p99 latency (h2load solid, loadgen HDR dashed)'
set ylabel 'p99 latency (ms, log)'
set logscale y
set yrange [*:*]
plot '/work/main/benches/results/20261206-peers/raw/plot-shardtel-http-h2load.dat' u 1:3 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  '/work/main/benches/results/20261206-peers/raw/plot-shardtel-http-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-http-h2load.dat' u 1:3 w lp pt 7 lc rgb '#7f7f7f' title 'otelcol', \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-http-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-http-h2load.dat' u 1:3 w lp pt 7 lc rgb '#d62728' title 'rotel', \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-http-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'http: achieved per collector core'
set ylabel 'achieved / cores (K spans/s)'
unset logscale y
set yrange [0:*]
plot '/work/main/benches/results/20261206-peers/raw/plot-shardtel-http-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#1f77b4' title 'shardtel (2 cores)', \
  '/work/main/benches/results/20261206-peers/raw/plot-otelcol-http-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#7f7f7f' title 'otelcol (2 cores)', \
  '/work/main/benches/results/20261206-peers/raw/plot-rotel-http-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#d62728' title 'rotel (2 cores)'
unset multiplot
