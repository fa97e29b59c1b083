set terminal pngcairo size 1800,520 font "sans,10"
set output "benches/results/20261206-processing-2/plot.png"
set multiplot layout 1,3 title "20261206-processing-2: OTLP traces -> blackhole, 100 spans/request (filled = passed: >=97%, no errors, RSS flat; x = not)"
set grid
set key top left font ',9'
set xlabel 'offered load (K spans/s)'
set title 'grpc: achieved throughput'
set ylabel 'achieved (K spans/s)'
unset logscale y
set xrange [0:1050]
set yrange [0:1050]
plot x title 'offered' dt 3 lc rgb '#888888', \
  'benches/results/20261206-processing-2/raw/plot-shardtel-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  'benches/results/20261206-processing-2/raw/plot-shardtel-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  'benches/results/20261206-processing-2/raw/plot-shardtel_spanmetrics-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#9467bd' title 'shardtel_spanmetrics', \
  'benches/results/20261206-processing-2/raw/plot-shardtel_spanmetrics-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  'benches/results/20261206-processing-2/raw/plot-shardtel_processing-grpc-h2load.dat' u 1:2 w lp pt 7 lc rgb '#8c564b' title 'shardtel_processing', \
  'benches/results/20261206-processing-2/raw/plot-shardtel_processing-grpc-h2load.dat' u 1:($5==1?1/0:$2) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'grpc: p99 latency (h2load solid, loadgen HDR dashed)'
set ylabel 'p99 latency (ms, log)'
set logscale y
set yrange [*:*]
plot 'benches/results/20261206-processing-2/raw/plot-shardtel-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#1f77b4' title 'shardtel', \
  'benches/results/20261206-processing-2/raw/plot-shardtel-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  'benches/results/20261206-processing-2/raw/plot-shardtel_spanmetrics-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#9467bd' title 'shardtel_spanmetrics', \
  'benches/results/20261206-processing-2/raw/plot-shardtel_spanmetrics-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle, \
  'benches/results/20261206-processing-2/raw/plot-shardtel_processing-grpc-h2load.dat' u 1:3 w lp pt 7 lc rgb '#8c564b' title 'shardtel_processing', \
  'benches/results/20261206-processing-2/raw/plot-shardtel_processing-grpc-h2load.dat' u 1:($5==1?1/0:$3) w p pt 2 ps 1.8 lc rgb 'black' notitle
set title 'grpc: achieved per collector core'
set ylabel 'achieved / cores (K spans/s)'
unset logscale y
set yrange [0:*]
plot 'benches/results/20261206-processing-2/raw/plot-shardtel-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#1f77b4' title 'shardtel (2 cores)', \
  'benches/results/20261206-processing-2/raw/plot-shardtel_spanmetrics-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#9467bd' title 'shardtel_spanmetrics (2 cores)', \
  'benches/results/20261206-processing-2/raw/plot-shardtel_processing-grpc-h2load.dat' u 1:($2/$4) w lp pt 7 lc rgb '#8c564b' title 'shardtel_processing (2 cores)'
unset multiplot
