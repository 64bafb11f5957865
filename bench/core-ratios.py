# Per-pass ratios of bench/core-pairs.sh output: python3 bench/core-ratios.py PREFIX
import sys,re,statistics as st
def load(f):
    passes=[];cur={}
    for line in open(f):
        m=re.match(r'Benchmark(\S+?)-2\s+\d+\s+([\d.]+) ns/task',line)
        if not m: continue
        name,v=m.group(1),float(m.group(2))
        if name in cur: passes.append(cur);cur={}
        cur[name]=v
    passes.append(cur);return passes
pre=sys.argv[1]
b=load(pre+'-before.txt'); a=load(pre+'-after.txt')
def med(xs): return "%.2f× [%.2f–%.2f]"%(st.median(xs),min(xs),max(xs))
for n in ['1000','100000']:
    for base in ['pool','cancellable','sequential']:
        print(f"n={n} RunTaskTimeout/TimeoutLoop {base}: after",med([p[f'RunTaskTimeout/n={n}']/p[f'TimeoutLoop/shape={base}/n={n}'] for p in a]), " before",med([p[f'RunTaskTimeout/n={n}']/p[f'TimeoutLoop/shape={base}/n={n}'] for p in b]))
    print(f"n={n} RunTaskTimeout/HandRolled: after",med([p[f'RunTaskTimeout/n={n}']/p[f'HandRolled/n={n}'] for p in a])," before",med([p[f'RunTaskTimeout/n={n}']/p[f'HandRolled/n={n}'] for p in b]))
    print(f"n={n} Run after/before (pairwise):",med([x[f'Run/n={n}']/y[f'Run/n={n}'] for x,y in zip(a,b)]))
    print(f"n={n} Run/FloorKeyed: after",med([p[f'Run/n={n}']/p[f'FloorKeyed/n={n}'] for p in a])," before",med([p[f'Run/n={n}']/p[f'FloorKeyed/n={n}'] for p in b]))
    print(f"n={n} (RunTT-Run)/(Loop pool-Floor): after",med([(p[f'RunTaskTimeout/n={n}']-p[f'Run/n={n}'])/(p[f'TimeoutLoop/shape=pool/n={n}']-p[f'Floor/n={n}']) for p in a]))
print("StreamSeq after/before:",med([x['StreamSeq']/y['StreamSeq'] for x,y in zip(a,b)]))
print("Stream after/before:",med([x['Stream']/y['Stream'] for x,y in zip(a,b)]))
